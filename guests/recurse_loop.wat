;; Recursion 10,000 calls deep, then back up, forever: no host call, no memory access.
(module
  (memory (export "memory") 1)
  (func $down (param $n i32)
    (if (local.get $n)
      (then (call $down (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "_start")
    (loop $again
      (call $down (i32.const 10000))
      (br $again))))
