;; Writes what stdin asks, so tests can place writes around where a stream's bytes move
;; from memory to its file: stdin is records of 5 bytes, a descriptor and a little-endian
;; length (at most 65536), each one fd_write of that many bytes. Byte k of a stream is
;; k mod 251, counted on from what the stream took before: a byte out of place shows.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 3)
  ;; 0: iovec; 8: bytes done; 16: the record; 32 + 4 * fd: the stream's position;
  ;; 65536: the bytes to write
  (func $record (result i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 5))
    (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (return (i32.const 0))))
    (i32.eq (i32.load (i32.const 8)) (i32.const 5)))
  (func (export "_start")
    (local $fd i32) (local $len i32) (local $at i32) (local $k i32)
    (block $end
      (loop $next
        (br_if $end (i32.eqz (call $record)))
        (local.set $fd (i32.load8_u (i32.const 16)))
        (local.set $len (i32.load (i32.const 17)))
        (br_if $end (i32.gt_u (local.get $len) (i32.const 65536)))
        (local.set $at (i32.add (i32.const 32) (i32.shl (local.get $fd) (i32.const 2))))
        (local.set $k (i32.const 0))
        (block $filled
          (loop $fill
            (br_if $filled (i32.ge_u (local.get $k) (local.get $len)))
            (i32.store8 (i32.add (i32.const 65536) (local.get $k))
              (i32.rem_u (i32.add (i32.load (local.get $at)) (local.get $k)) (i32.const 251)))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $fill)))
        (i32.store (i32.const 0) (i32.const 65536))
        (i32.store (i32.const 4) (local.get $len))
        (i32.store (i32.const 8) (i32.const 0))
        (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
        (i32.store (local.get $at) (i32.add (i32.load (local.get $at)) (i32.load (i32.const 8))))
        (br $next)))))
