;; The starter function: answers every request with "<GREETING> from Stockade!",
;; GREETING read from its environment (the manifest sets it; "Hello" without it), CGI
;; over WASI (headers, an empty line, then the body, written to standard output).
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  ;; 0-15: iovec and sizes; 16-127: text; 4096-8191: up to 1,024 variable pointers;
  ;; 8192 to the end of the two pages: the variables themselves.
  (memory (export "memory") 2)
  (data (i32.const 16) "Content-Type: text/plain\n\n")
  (data (i32.const 64) "GREETING=")
  (data (i32.const 80) "Hello")
  (data (i32.const 96) " from Stockade!\n")

  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  ;; 1 when the variable at $p starts with "GREETING=".
  (func $is_greeting (param $p i32) (result i32)
    (local $k i32)
    (block $no
      (loop $next
        (if (i32.eq (local.get $k) (i32.const 9)) (then (return (i32.const 1))))
        (br_if $no (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $k)))
                           (i32.load8_u (i32.add (i32.const 64) (local.get $k)))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; GREETING's value as (pointer, length), or the default.
  (func $greeting (result i32 i32)
    (local $count i32) (local $i i32) (local $p i32) (local $n i32)
    (if (call $environ_sizes_get (i32.const 8) (i32.const 12))
      (then (return (i32.const 80) (i32.const 5))))
    (local.set $count (i32.load (i32.const 8)))
    ;; More variables than the space set aside: answer with the default.
    (if (i32.or (i32.gt_u (local.get $count) (i32.const 1024))
                (i32.gt_u (i32.load (i32.const 12)) (i32.const 122880)))
      (then (return (i32.const 80) (i32.const 5))))
    (if (call $environ_get (i32.const 4096) (i32.const 8192))
      (then (return (i32.const 80) (i32.const 5))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $p (i32.load (i32.add (i32.const 4096) (i32.shl (local.get $i) (i32.const 2)))))
        (if (call $is_greeting (local.get $p))
          (then
            (local.set $p (i32.add (local.get $p) (i32.const 9)))
            (block $end
              (loop $scan
                (br_if $end (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
                (local.set $n (i32.add (local.get $n) (i32.const 1)))
                (br $scan)))
            (return (local.get $p) (local.get $n))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 80) (i32.const 5))

  (func (export "_start")
    (local $len i32) (local $ptr i32)
    (call $write (i32.const 16) (i32.const 26))
    (call $greeting)
    (local.set $len)
    (local.set $ptr)
    (call $write (local.get $ptr) (local.get $len))
    (call $write (i32.const 96) (i32.const 16))))
