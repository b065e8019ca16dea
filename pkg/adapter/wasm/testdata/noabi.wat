;; noabi: a valid module that does not export the adapter ABI.
(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 0)))
