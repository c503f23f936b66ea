;; Imports a WASIX socket call Stockade does not provide: must be denied before running.
(module
  (import "wasix_32v1" "sock_open" (func $sock_open (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")))
