;; Attack (ours: instance growth by declaration): a linear memory whose minimum is
;; the whole 4 GiB of wasm32 (65,536 pages), reserved at instantiation.
(module
  (memory 65536)
  (func (export "_start")
    ;; touch the last page so the declaration is not free
    (i32.store (i32.const 4294967292) (i32.const 1))))
