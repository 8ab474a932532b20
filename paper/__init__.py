"""paper: figures drawn from result folders only (figures never simulate)."""
