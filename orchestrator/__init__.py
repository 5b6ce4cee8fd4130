"""Capstan orchestrator: control API, node gateway, store, scheduler, reconciler."""
