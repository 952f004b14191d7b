"""The Python half of the C host API (plugins/host, `make host`): `bridge` is what libgt_host.so calls."""
