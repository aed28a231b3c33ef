"""The command line: generate-text, generate-music and generator. Nothing imports this package."""
