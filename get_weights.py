#!/usr/bin/env python3
"""Write MST++ weights to an .npz keyed by state-dict names (e.g. body.0.embedding.weight).

The program is mstpp/scripts/get_weights.py; `python get_weights.py --help` lists its options.
"""
from mstpp.scripts.get_weights import main

if __name__ == "__main__":
    raise SystemExit(main())
