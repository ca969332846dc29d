"""Importers: the user's own files into moesim's vocabulary, and real runs back against it.

``hf`` (Hugging Face ``config.json`` -> model spec report), ``megatron`` (Megatron-LM arguments ->
Scenario), ``torchtitan`` (a torchtitan TOML -> Scenario), ``scenario_files`` (YAML / TOML
scenario files), ``kineto`` (PyTorch profiler Chrome traces: kernels classified into moesim's op
classes) and ``compare`` (a real trace against a simulated one). Every importer lists what it
read, what it cannot model and refuses what it does not know; nothing is dropped silently.
"""
