"""The ham daemon's insides: model (the tree), engine (conditions and actions), ops (requests
and who may make them), server (sockets), launch (processes), store/journal/hlog, daemon."""
