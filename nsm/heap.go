package nsm

// queued is what indexedHeap needs of its elements: where to keep their
// index (for heap.Fix and heap.Remove) and their order.
type queued[T any] interface {
	heapIndex() *int
	runsBefore(T) bool
}

// indexedHeap is a container/heap of pointers that know their index; an
// element popped or removed has index -1.
type indexedHeap[T queued[T]] []T

func (q indexedHeap[T]) Len() int           { return len(q) }
func (q indexedHeap[T]) Less(i, j int) bool { return q[i].runsBefore(q[j]) }
func (q indexedHeap[T]) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	*q[i].heapIndex(), *q[j].heapIndex() = i, j
}

func (q *indexedHeap[T]) Push(x any) {
	e := x.(T)
	*e.heapIndex() = len(*q)
	*q = append(*q, e)
}

func (q *indexedHeap[T]) Pop() any {
	old := *q
	e := old[len(old)-1]
	var zero T
	old[len(old)-1] = zero
	*q = old[:len(old)-1]
	*e.heapIndex() = -1
	return e
}
