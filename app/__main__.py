"""`python -m app` is the same program as `pricestream`."""

from app.cli import main

main()
