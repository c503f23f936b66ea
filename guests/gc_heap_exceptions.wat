;; Attack (ours: memory beside the limit): linear memory grown to the limit ("L" per MiB on
;; stdout), then exception objects of 1 KiB kept in a table ("G" per 1024 of them) until
;; wasmtime refuses. They live in a GC heap, which wasmtime caps as a memory of its own.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (tag $t (param
       v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128
       v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128
       v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128
       v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128 v128))
  (table $keep 100000 exnref)
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
  (func (export "_start") (local $i i32) (local $x exnref)
    (call $grow)
    (loop $keep
      (block $caught (result exnref)
        (try_table (catch_all_ref $caught)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2) (v128.const i64x2 1 2)
          (throw $t))
        unreachable)
      (local.set $x)
      (table.set $keep (local.get $i) (local.get $x))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (if (i32.eqz (i32.and (local.get $i) (i32.const 1023))) (then (call $say (i32.const 17))))
      (br_if $keep (i32.lt_u (local.get $i) (i32.const 100000))))))
