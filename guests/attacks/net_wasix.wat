;; Attack (paper: network connections and packet floods, WASIX): open a UDP socket,
;; connect it to 127.0.0.1:9 and send 1,000,000 datagrams of 512 bytes with
;; sock_send_to, then open and connect TCP sockets 1,000 times. Needs the WASIX
;; `wasix_32v1` socket imports; a runtime without them refuses it before it runs.
(module
  (import "wasix_32v1" "sock_open" (func $sock_open (param i32 i32 i32 i32) (result i32)))
  (import "wasix_32v1" "sock_connect" (func $sock_connect (param i32 i32) (result i32)))
  (import "wasix_32v1" "sock_send_to"
    (func $sock_send_to (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0: the socket descriptor; 16: a WASIX addr_port for 127.0.0.1:9; 64: an iovec
  ;; pointing at 512 bytes at 128; 8: bytes sent.
  (data (i32.const 16) "\01\00\00\09\7f\00\00\01")
  (data (i32.const 64) "\80\00\00\00\00\02\00\00")
  (func (export "_start")
    (local $i i32)
    (drop (call $sock_open (i32.const 1) (i32.const 2) (i32.const 0) (i32.const 0)))
    (drop (call $sock_connect (i32.load (i32.const 0)) (i32.const 16)))
    (loop $flood
      (drop (call $sock_send_to (i32.load (i32.const 0)) (i32.const 64) (i32.const 1)
        (i32.const 0) (i32.const 16) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $flood (i32.lt_u (local.get $i) (i32.const 1000000))))
    (local.set $i (i32.const 0))
    (loop $connect
      (drop (call $sock_open (i32.const 1) (i32.const 1) (i32.const 0) (i32.const 0)))
      (drop (call $sock_connect (i32.load (i32.const 0)) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $connect (i32.lt_u (local.get $i) (i32.const 1000))))))
