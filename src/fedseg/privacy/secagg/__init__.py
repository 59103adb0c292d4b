"""Secure aggregation (SecAgg, Bonawitz et al. 2017) from maintained primitives, engine-free
and torch-free: pairwise masks that cancel in the sum, a self mask per site, and both
masks' seeds secret-shared among the round's sites so the sum can be unmasked when sites
drop out.

- ``prg``: the mask generator (ChaCha20 keystream, ``cryptography``);
- ``shamir``: t-of-n sharing of any multiple of 16 bytes (pycryptodome's GF(2^128)
  ``Shamir``, 16-byte blocks);
- ``keys``: fresh X25519 keys per round, ECDH + HKDF, AES-256-GCM for share transport, the
  site's consortium key signing its round keys (ECDSA P-384) and the peers' checks;
- ``protocol``: the stages, as pure functions of plain values, for the site and the
  aggregator.
"""
