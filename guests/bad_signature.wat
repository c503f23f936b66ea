;; Imports a real WASI function with the wrong signature.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fw (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $fw (i32.const 1)))))
