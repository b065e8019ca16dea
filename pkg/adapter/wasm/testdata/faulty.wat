;; faulty: misbehaves on demand, by the request body's first byte:
;;   't' traps (unreachable)          -> 502 adapter trapped
;;   'l' loops forever                 -> 504 after the per-call deadline
;;   'o' returns an out-of-bounds output (ptr 0xffff0000) -> 502
;;   'g' grows memory without bound    -> 502 (memory limit)
;; anything else: topic "echo", the body as payload (well-behaved).
;; No adapt_response: the chain's answer is sent as it is.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))

  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (global.get $heap) (i32.const 65536)) (then unreachable))
    (local.get $p))

  (data (i32.const 0) "echo\n")

  (func (export "adapt_request") (param $ptr i32) (param $len i32) (result i64)
    (local $c i32)
    (if (i32.gt_u (local.get $len) (i32.const 0))
      (then (local.set $c (i32.load8_u (local.get $ptr)))))
    (if (i32.eq (local.get $c) (i32.const 116)) (then unreachable))       ;; 't'
    (if (i32.eq (local.get $c) (i32.const 108)) (then (loop $l (br $l)))) ;; 'l'
    (if (i32.eq (local.get $c) (i32.const 111))                          ;; 'o'
      (then (return (i64.const 0xffff000000000010))))
    (if (i32.eq (local.get $c) (i32.const 103))                          ;; 'g'
      (then (loop $g (br_if $g (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))
    ;; "echo\n" + body: copy the body right after the topic line at 0..5.
    ;; Bodies longer than 1019 bytes would overlap the heap: the test's are short.
    (memory.copy (i32.const 5) (local.get $ptr) (local.get $len))
    (i64.extend_i32_u (i32.add (local.get $len) (i32.const 5)))))
