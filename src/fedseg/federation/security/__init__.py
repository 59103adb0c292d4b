"""The consortium's security: its PKI (CA, server certificate, enrolled site keys)."""
