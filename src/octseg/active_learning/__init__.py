"""Active learning around any supervised module: acquisition functions (random, MC-dropout
entropy, EdgeAL), a dataset revealing labels pixel by pixel, the round loop as a Lightning
callback, and the learning curve."""
