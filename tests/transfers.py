"""Expected host-transfer counts of ``count_transfers(strict=True)`` (see ``tests/conftest.py``)."""

NO_TRANSFER = {"cpu": 0, "item": 0, "tolist": 0, "numpy": 0, "float": 0, "int": 0, "bool": 0}
ONE_CAPTURE = {**NO_TRANSFER, "cpu": 1, "numpy": 1}  # to_host: one .cpu() of everything, then its .numpy()
