"""Last entry of the reference loader's forkserver preload list: moves every object the
preload created (torch, numpy, PIL, this package) into the garbage collector's permanent
generation, so that no DataLoader worker forked from the forkserver ever traverses them.

A worker inherits the forkserver's ~145 MB of objects copy-on-write. A full collection in
the worker writes every tracked object's header, which copies each page holding one: with
a 1.28 M-sample split, unpickling the split's shard paths alone allocated enough objects
to trigger one, and each worker's private memory went from ~6 to ~45 MB (measured). This
is what `gc.freeze` is documented for. Importing this module anywhere but inside a
forkserver does nothing.
"""

import gc

from pipeline.forkserver_signals import inside_forkserver

if inside_forkserver():
    gc.collect()
    gc.freeze()
