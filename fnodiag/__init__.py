"""fnodiag: diagnose training collapse of FNO/U-NO ptychography generators."""
__version__ = "0.1.0"
