"""AI providers behind one small interface (``base.Provider``), and the retry policy around them."""
