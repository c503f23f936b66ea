;; Declares 64 MiB of linear memory up front: refused at instantiation under a smaller limit.
(module
  (memory (export "memory") 1024)
  (func (export "_start")))
