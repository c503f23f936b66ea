;; Attack (ours: memory beside the limit): linear memory grown to the limit ("L" per MiB on
;; stdout), then GC arrays of 1 MiB kept in a table ("G" per array) until wasmtime
;; refuses. They live in a GC heap, which wasmtime caps as a memory of its own.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (type $bytes (array (mut i8)))
  (table $keep 10000 (ref null $bytes))
  (memory (export "memory") 1)
  (data (i32.const 16) "LG")
  (func $say (param $at i32)
    (i32.store (i32.const 0) (local.get $at))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $grow  ;; linear memory, 1 MiB at a time while it may
    (loop $more
      (if (i32.ne (memory.grow (i32.const 16)) (i32.const -1))
        (then (call $say (i32.const 16)) (br $more)))))
  (func (export "_start") (local $i i32)
    (call $grow)
    (loop $keep
      (table.set $keep (local.get $i) (array.new_default $bytes (i32.const 1048576)))
      (call $say (i32.const 17))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $keep (i32.lt_u (local.get $i) (i32.const 10000))))))
