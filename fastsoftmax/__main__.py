"""``python -m fastsoftmax {demo,bench,info,warmup}``."""

from ._cli import main

if __name__ == "__main__":
    main()
