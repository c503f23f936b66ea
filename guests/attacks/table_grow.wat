;; Attack (ours: table growth): grow a funcref table by 10,000 elements at a time,
;; up to 5,000 times (50 million elements, about 400 MB of host memory), stopping
;; when a grow fails.
(module
  (table $t 1 funcref)
  (func (export "_start")
    (local $i i32)
    (loop $grow
      (if (i32.eq (table.grow $t (ref.null func) (i32.const 10000)) (i32.const -1))
        (then (return)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $grow (i32.lt_u (local.get $i) (i32.const 5000))))))
