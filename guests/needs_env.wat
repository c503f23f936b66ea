;; Imports a function from a module nobody provides.
(module
  (import "env" "host_magic" (func $magic (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $magic))))
