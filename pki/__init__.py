"""Capstan's PKI: certificate authority, identities, token keys and capability tokens."""
