"""Other projects' files: the reference project's runs and CSV logs (``reference_import``,
``reference_log``), its checkpoint layout (``checkpoint_export``) and TensorBoard event files
(``tensorboard``).
"""
