;; Grows its memory a page at a time (memory.grow answers -1 at the limit) and never stops:
;; no host call, so only a deadline stops it.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $again
      (drop (memory.grow (i32.const 1)))
      (br $again))))
