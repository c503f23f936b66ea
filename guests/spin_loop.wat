;; A bare `(loop br 0)`: no memory access, no host call, no function call. Only a deadline
;; check compiled into the loop (epochs) or the end of its process stops it.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $spin (br $spin))))
