"""The node agent.

Samples CPU stacks with BPF, symbolizes them, attributes them to processes and ships batches
to the server.
"""
