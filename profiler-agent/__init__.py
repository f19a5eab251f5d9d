"""The node agent: samples CPU stacks with BPF, symbolizes them, attributes them to processes and ships batches to the server."""
