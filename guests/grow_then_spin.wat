;; Grows its memory from 1 to 65 pages (4 MiB + 64 KiB) at once, then spins without a
;; host call: only a deadline stops it, and the memory it reached is its peak.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (memory.grow (i32.const 64)))
    (loop $spin (br $spin))))
