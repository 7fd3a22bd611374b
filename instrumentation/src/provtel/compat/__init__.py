"""Drop-in replacements for other provenance libraries' APIs, recording through provtel.

* :mod:`provtel.compat.yprov4ml` — the module-level functions of yProv4ML 3.x
  (``import provtel.compat.yprov4ml as yprov4ml``).
"""
