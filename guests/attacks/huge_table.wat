;; Attack (ours: instance growth by declaration): a table declared with 10 million
;; elements at instantiation, before any guest code runs.
(module
  (table 10000000 funcref)
  (func (export "_start")))
