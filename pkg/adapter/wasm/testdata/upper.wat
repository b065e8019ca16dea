;; upper: a well-behaved custom adapter (guest ABI: see ../doc.go).
;; Request body "TOPIC:payload" -> topic TOPIC, payload upper-cased
;; (ASCII). The colon is overwritten with '\n' and the payload upper-cased
;; in place, so the output is the input buffer itself. A body without a
;; colon traps (-> 502). The answer comes back wrapped in "[...]".
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))

  ;; alloc: bump allocator, growing memory as needed (each call gets a
  ;; fresh instance, so nothing is ever freed).
  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (global.get $heap))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.sub
                  (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16))
                  (memory.size)))
              (i32.const -1))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $p))

  (func (export "adapt_request") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $end i32) (local $b i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $i (local.get $ptr))
    ;; find ':'
    (block $found
      (loop $scan
        (if (i32.ge_u (local.get $i) (local.get $end)) (then unreachable))
        (br_if $found (i32.eq (i32.load8_u (local.get $i)) (i32.const 58)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (i32.store8 (local.get $i) (i32.const 10))
    ;; upper-case the rest
    (block $done
      (loop $up
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $b (i32.load8_u (local.get $i)))
        (if (i32.and (i32.ge_u (local.get $b) (i32.const 97)) (i32.le_u (local.get $b) (i32.const 122)))
          (then (i32.store8 (local.get $i) (i32.sub (local.get $b) (i32.const 32)))))
        (br $up)))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len))))

  (func (export "adapt_response") (param $ptr i32) (param $len i32) (result i64)
    (local $out i32)
    (local.set $out (call $alloc (i32.add (local.get $len) (i32.const 2))))
    (i32.store8 (local.get $out) (i32.const 91)) ;; '['
    (memory.copy (i32.add (local.get $out) (i32.const 1)) (local.get $ptr) (local.get $len))
    (i32.store8 (i32.add (i32.add (local.get $out) (local.get $len)) (i32.const 1)) (i32.const 93)) ;; ']'
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
      (i64.extend_i32_u (i32.add (local.get $len) (i32.const 2))))))
