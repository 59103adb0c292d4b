"""Federation, one folder per concern: ``rounds`` (engine-free round loop and math) <
``engine`` (Flower) and ``security`` (PKI) < ``commands`` (simulate, deploy, resume, ...)."""
