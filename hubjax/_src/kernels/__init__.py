"""The compiled CPU kernels (``_cpu_select.cc``, an XLA FFI handler built by ``pip install``) and
their Python binding (:mod:`~hubjax._src.kernels.cpu`). Only the candidate sources, the finisher's
pair sums and the selection primitives (:mod:`hubjax._src.select`) call them, each through
``lax.platform_dependent`` with a portable XLA path that gives the same bits.
"""
