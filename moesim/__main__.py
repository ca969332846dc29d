"""``python -m moesim`` runs the same CLI as the ``moesim`` console script."""
from moesim.cli import main

if __name__ == "__main__":
    main()
