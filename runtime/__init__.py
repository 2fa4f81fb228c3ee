"""`tsf-extract`: the lean, Paddle-free runtime."""
