"""What the tests share: the NumPy port of the model, a foreign port, the command-line runner, bit identity."""
