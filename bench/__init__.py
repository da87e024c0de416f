"""Benchmarks for chatsessions: ``python -m bench`` (``make bench``), ``--quick`` to smoke-test.

Each module measures one target of issue 7 and returns ratios taken within one run, since
absolute times on a shared machine mean little: ``overhead`` (against the tutorial's dict
baseline), ``flat`` (per-turn cost against turn index) and ``peer`` (against LangChain).
"""
