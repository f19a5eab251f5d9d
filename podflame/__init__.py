"""podflame: a continuous eBPF profiler for Kubernetes.

The stages live in their own top-level folders and are mapped to subpackages
by pyproject.toml: model, bpf, symbolizer, agent (profiler-agent/), server, ui.
"""

__version__ = "0.1.0"
