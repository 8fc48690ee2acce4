"""launcher's tests, laid out like the package.

- unit/<package path>/test_<module>.py: one module's behaviour, in process (a few start a local Ray).
- integration/: real Ray Train / Tune runs end to end, the bad-input catalogue through the CLI, cluster
  YAMLs, S3 storage, multi-node, `launcher submit` jobs, the README and examples.
- faults/: worker, node and driver loss (`make test-slow`); xla/: the torch-xla lane (`make test-xla`).
- helpers/: the shared builders (tiny models, data, configs, clusters), imported as `tests.helpers.<module>`;
  conftest.py holds only fixtures.

Tiers are chosen by markers (`ray`, `slow`, `xla`, `gpu`), not by folder.
"""
