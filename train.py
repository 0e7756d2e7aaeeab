#!/usr/bin/env python3
"""Train MST++ on synthetic NTIRE-2022-style data generated on the fly (``mstpp.synth``).

The program is mstpp/scripts/train.py; `python train.py --help` lists its options.
"""
from mstpp.scripts.train import main

if __name__ == "__main__":
    raise SystemExit(main())
