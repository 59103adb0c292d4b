"""The consortium's security: its PKI (CA, server certificate, enrolled site keys) and the
enrollment of those keys with the aggregator's SuperLink."""
