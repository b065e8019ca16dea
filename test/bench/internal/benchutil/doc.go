// Package benchutil holds the pieces shared by the SPRIGHT benchmark
// programs under test/bench: running wrk and parsing its report, and
// accounting the CPU time of a process tree from /proc.
//
// It deliberately depends on nothing in the SPRIGHT module, so a benchmark
// can measure whatever `spright` binary it is given without being compiled
// against the code under test.
package benchutil
