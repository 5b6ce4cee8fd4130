"""Capstan node agent: NodeService, token authorization and runtimes."""
