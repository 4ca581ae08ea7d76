using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Attribution;

/// <summary>
/// The reference half of a DeepLift pass, recorded once: the reference activation every top-level rule received
/// (in call order; one row each), and the reference's logits. The reference half never needs a gradient and depends
/// only on the model, the reference (kind, length, padded width) and the rule options, so replaying it is exact: a
/// pass that replays a tape computes no linear map on the reference at all, and texts of different lengths can share
/// one pass, each group of equal length against its own one-row tape.
/// </summary>
public sealed class ReferenceTape : IDisposable
{
    private readonly List<Tensor[]> _inputs;
    private int _users;
    private bool _evicted, _disposed;

    internal ReferenceTape(List<Tensor[]> inputs, Tensor logits)
    {
        _inputs = inputs;
        Logits = logits;
        Bytes = inputs.SelectMany(t => t).Append(logits).Sum(t => t.numel() * t.ElementSize);
    }

    /// <summary>The reference's model output [1, C].</summary>
    public Tensor Logits { get; }

    /// <summary>Top-level rule calls recorded.</summary>
    public int Steps => _inputs.Count;

    /// <summary>Bytes the recorded activations hold (views of one storage counted once each; an upper bound).</summary>
    public long Bytes { get; }

    /// <summary>Every recorded activation, for tests: each has one row.</summary>
    internal IEnumerable<Tensor> Activations => _inputs.SelectMany(t => t).Append(Logits);

    internal Tensor Input(int step, int operand)
    {
        if (step >= _inputs.Count)
            throw new InvalidOperationException($"the reference tape has {_inputs.Count} rule steps, but the pass asked for step {step + 1}: the tape was recorded on another model or architecture");
        return _inputs[step][operand];
    }

    /// <summary>
    /// Records the reference half of <paramref name="model"/>'s forward for one reference [1, W, H] with its own mask
    /// [1, W], through the same rules a pass uses, without gradients. Both halves are the reference tensor itself
    /// (<see cref="Act.IsReferenceOnly"/>), so the ops and rules compute the reference half only: half the work of a
    /// pass carrying it beside a text. What a rule passes on as the reference's value is computed from the reference
    /// alone (the softmax rule's shared shift stays inside the rule), so the tape holds exactly what a pass carrying
    /// the reference computes (bit for bit: MixedLengthBatchTests).
    /// </summary>
    internal static ReferenceTape Record(Models.ITextModel model, Tensor reference, Tensor mask, DeepLiftOps ops)
    {
        if (reference.shape[0] != 1) throw new ArgumentException("a tape records one reference row", nameof(reference));
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var recorder = new TapeRecorder(ops);
        var r = reference.detach();
        var logits = model.Forward(recorder, Act.ReferenceOnly(r), mask);
        return new ReferenceTape(recorder.Inputs, Keep(logits.Ref));
    }

    /// <summary>A handle of its own on the same storage, owned by the tape, not by any dispose scope.</summary>
    internal static Tensor Keep(Tensor t)
    {
        var kept = t.detach();
        kept.DetachFromDisposeScope();
        return kept;
    }

    // A cached tape may be evicted while a pass still replays it: it is freed when its last user lets go.
    internal void Acquire() { lock (_inputs) _users++; }

    internal void Release()
    {
        lock (_inputs)
        {
            _users--;
            if (_evicted && _users == 0) Free();
        }
    }

    internal void Evict()
    {
        lock (_inputs)
        {
            _evicted = true;
            if (_users == 0) Free();
        }
    }

    public void Dispose() => Evict();

    private void Free()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _inputs.SelectMany(x => x)) t.Dispose();
        Logits.Dispose();
    }

    /// <summary>Passes every rule call to the DeepLift ops and keeps the reference activation it received.</summary>
    internal sealed class TapeRecorder(DeepLiftOps inner) : TensorOps
    {
        public List<Tensor[]> Inputs { get; } = new();

        private void Note(params Act[] operands) => Inputs.Add(operands.Select(a => Keep(a.Ref)).ToArray());

        public override Act Apply(Act a, Activation activation) { Note(a); return inner.Apply(a, activation); }
        public override Act Softmax(Act a, long dim) { Note(a); return inner.Softmax(a, dim); }

        /// <summary>A LayerNorm keeps what its rule computes of the reference (<see cref="Rules.LayerNormRule.ReferenceHalf"/>), not its input.</summary>
        public override Act LayerNorm(Act a, Tensor weight, Tensor bias, double eps)
        {
            var (centered, inverseStd) = Rules.LayerNormRule.ReferenceHalf(a.Ref, eps);
            Inputs.Add(new[] { Keep(centered), Keep(inverseStd) });
            return inner.LayerNorm(a, weight, bias, eps);
        }
        public override Act MatMul(Act a, Act b) { Note(a, b); return inner.MatMul(a, b); }
        public override Act Mul(Act a, Act b) { Note(a, b); return inner.Mul(a, b); }
    }
}

/// <summary>
/// Ops for a pass whose reference half comes from tapes: linear maps run on the input half only; every rule gets, for
/// each group of rows (texts of one length, contiguous), that group's recorded reference activation, one row wide.
/// With one group the rule runs once on the whole batch against that row, broadcast (exactly what a pass carrying its
/// reference computes). With several, the rule still runs once on the whole batch: the fused CPU loops (GELU's secant,
/// the exact softmax) read each group's tape where it is, at its own length, with the group of each row (the padding's
/// values past a tape's end: <see cref="Rules.CpuKernels.TrySecantGrouped"/>); the products and LayerNorm add each
/// group's tape in place over its rows (<see cref="HalfSum"/>, <see cref="PlusEachGroup"/>); and the loops' fallbacks
/// (float64, other devices) take each row's reference copied out to it [rows, …]. The reference half needs no gradient,
/// so no rule is split by group: a rule run per group cost its split and cat forward and backward and its launches once
/// per group (`fleet bench job --repeats 6`, the 33-text job of 23 lengths, the same plan: 1.21–1.23× the fixed-length
/// figure per token that way, 1.16–1.17× with the references copied out). The rules' own reference outputs are not
/// computed (<see cref="DeepLiftOps.MatMulInputHalf"/>, <see cref="Rules.LayerNormRule.InputHalf"/>): the tape already
/// holds what the next rule needs.
/// <para>
/// With several lengths the model may also run its position-wise layers on the real tokens only (<see cref="PacksTokens"/>,
/// <see cref="TokenPacking"/>): a packed activation [1, N, …] holds each group's texts one after another, so each group's
/// tape covers its texts as one strided view there too, with no padding at all; attention stays padded. Packed, the
/// padding's share of a batch costs nothing in the linear maps, the FFN, GELU and the LayerNorms (`fleet bench job
/// --repeats 4`, the same 6-batch plans packed against padded, one process: 2–6 % less per job), and the planner cuts
/// fuller batches (<see cref="Text.BucketCostModel.PackedTokens"/>).
/// </para>
/// <para>
/// A tape is recorded at its own length l; a pass of width W &gt; l pads it (<see cref="Assemble"/>) along every dimension
/// where the tape has l and the pass's activation has W. That is exact for the text's real positions: padded keys are
/// masked, so a real query's attention to them is the same in both halves (scores finfo.min before the softmax: the
/// padding value there, which is also the value a masked score takes, s + finfo.min rounding to finfo.min; probabilities
/// 0 after it: the padding value elsewhere) and passes no multiplier; padded positions themselves get no gradient from
/// any real output (masked keys, pooling over real tokens), and their difference from the reference at the embeddings is
/// 0 ([PAD] in both), so the values padded there (0) only have to be finite. mixed-length batches equal each text alone
/// within 1e-12 in float64 (MixedLengthBatchTests), on every family.
/// </para>
/// </summary>
internal sealed class TapeReplayOps : TensorOps
{
    private readonly DeepLiftOps _inner;
    private readonly IReadOnlyList<ReferenceTape> _tapes;
    private readonly int[] _lengths;
    private readonly long _width;
    private readonly long[] _groupOfRow;
    private readonly long[] _rowsPerGroup;
    private readonly long[] _lengthOfRow, _tokenStart;
    private readonly long _tokens;
    private int _step;

    /// <param name="rowsPerGroup">Rows of each group, in order (a group's rows are contiguous).</param>
    public TapeReplayOps(DeepLiftOps inner, IReadOnlyList<ReferenceTape> tapes, long[] rowsPerGroup, int[] lengths, long width)
    {
        _inner = inner;
        _tapes = tapes;
        _lengths = lengths;
        _width = width;
        _rowsPerGroup = rowsPerGroup;
        _groupOfRow = ReferenceGroups.GroupOfRow(rowsPerGroup);
        _lengthOfRow = _groupOfRow.Select(g => (long)lengths[g]).ToArray();
        _tokenStart = new long[rowsPerGroup.Length];
        for (int g = 1; g < rowsPerGroup.Length; g++) _tokenStart[g] = _tokenStart[g - 1] + rowsPerGroup[g - 1] * lengths[g - 1];
        _tokens = _lengthOfRow.Sum();
    }

    /// <summary>
    /// Several lengths: the model may pack its position-wise layers (<see cref="TokenPacking"/>). A packed activation
    /// [1, N, …] holds group g's texts one after another from token <c>_tokenStart[g]</c>, each its tape's l_g positions,
    /// so each group's tape still covers its rows as one strided view (<see cref="EachGroupRegion"/>), and nothing is padded.
    /// </summary>
    public override bool PacksTokens => _tapes.Count > 1;

    /// <summary>An activation in the packed layout: one row of the batch's N real tokens (a padded one has B ≥ 2 rows of W &lt; N).</summary>
    private bool IsPacked(long[] shape) => _tapes.Count > 1 && shape.Length >= 2 && shape[0] == 1 && shape[1] == _tokens;

    /// <summary>Rule calls replayed so far (equal to the tapes' steps after a whole forward).</summary>
    public int Steps => _step;

    public override Act Apply(Act a, Activation activation) =>
        Run(new[] { a }, p => _inner.Apply(p[0], activation), grouped: (x, tapes) => _inner.ApplyGrouped(x, tapes, _groupOfRow, IsPacked(x.shape) ? _lengthOfRow : null, activation));
    public override Act Softmax(Act a, long dim) =>
        Run(new[] { a }, p => _inner.Softmax(p[0], dim), softmaxDim: dim, grouped: (x, tapes) => _inner.SoftmaxGrouped(x, tapes, _groupOfRow, dim));
    public override Act MatMul(Act a, Act b) => _tapes.Count == 1 ? Run(new[] { a, b }, p => _inner.MatMulInputHalf(p[0], p[1])) : Product(a, b, matmul: true);
    public override Act Mul(Act a, Act b) => _tapes.Count == 1 ? Run(new[] { a, b }, p => _inner.MulInputHalf(p[0], p[1])) : Product(a, b, matmul: false);

    /// <summary>
    /// LayerNorm from what its tape step holds, the centered reference a0 and r0 (<see cref="Rules.LayerNormRule.ReferenceHalf"/>):
    /// nothing computed on the reference. Several groups: a + a0 for every row is a's copy with each group's a0 added over
    /// its rows (<see cref="PlusEachGroup"/>), and r0 (one value a position) is copied out.
    /// </summary>
    public override Act LayerNorm(Act a, Tensor weight, Tensor bias, double eps)
    {
        int step = _step++;
        using var scope = NewDisposeScope();
        var output = Rules.LayerNormRule.InputHalf(this, a.X,
            t => _tapes.Count == 1 ? t + Assemble(step, 0, t, null).to_type(t.dtype) : PlusEachGroup(step, 0, t),
            variance => Assemble(step, 1, variance, null), weight, bias, eps).X;
        scope.MoveToOuter(output);
        return new Act(output);
    }

    /// <summary><c>x + x0</c> for every row of <paramref name="x"/> against its group's tape activation (in x's precision), the tape added in place over its group's rows.</summary>
    private Tensor PlusEachGroup(int step, int operand, Tensor x)
    {
        var sum = x.clone();
        var dtype = sum.dtype;
        EachGroupRegion(sum, step, operand, (region, tape) => region.add_(tape.dtype == dtype ? tape : tape.to_type(dtype)));
        return sum;
    }

    /// <summary>
    /// Hands <paramref name="act"/> each group's rows of <paramref name="full"/> (shaped like the pass's activation), on
    /// its tape's extent, with the tape. Each region is one strided view (the group's first row, the tape's sizes,
    /// full's strides): a narrow per dimension and the shapes read again for every group cost more native calls than the
    /// adds themselves (a job of 6 batches and ~5 lengths each makes ~10,000 such adds).
    /// </summary>
    private void EachGroupRegion(Tensor full, int step, int operand, Action<Tensor, Tensor> act)
    {
        var shape = full.shape;
        var stride = full.stride();
        bool packed = IsPacked(shape);
        long offset = full.storage_offset(), start = 0;
        for (int g = 0; g < _tapes.Count; g++)
        {
            var tape = _tapes[g].Input(step, operand);
            var size = tape.shape;
            Check(size, g, shape, packed);
            size[0] = _tapes.Count == 1 ? shape[0] : _rowsPerGroup[g]; // one group: all of full's rows (one, for a broadcast row)
            if (packed)
            {
                // Packed: the group's texts are consecutive runs of l_g tokens, so its rows step l_g tokens.
                var rowStride = (long[])stride.Clone();
                rowStride[0] = _lengths[g] * stride[1];
                act(full.as_strided(size, rowStride, offset + _tokenStart[g] * stride[1]), tape);
                continue;
            }
            act(full.as_strided(size, stride, offset + start * stride[0]), tape);
            start += size[0];
        }
    }

    /// <summary>
    /// The product rule on a batch of several lengths: its multipliers are the means <c>(a + a0)/2</c>, <c>(b + b0)/2</c>
    /// (<see cref="Rules.ProductRule"/>), computed against each group's tape in place (<see cref="HalfSum"/>) rather than
    /// from each row's reference copied out: two passes over the rows fewer (copy, then add and halve, was three ops; halve,
    /// then add each group's tape, is two). The attention's two products took 0.116 s of the 33-text job of 28 lengths
    /// (`fleet bench job --seed 2`, a timer round the rule) against 0.163 s with the copy, and 0.068–0.084 s with one
    /// length a batch; the rest is one call per group.
    /// </summary>
    private Act Product(Act a, Act b, bool matmul)
    {
        int step = _step++;
        using var scope = NewDisposeScope();
        Tensor? aMean, bMean;
        using (no_grad())
        {
            aMean = b.X.requires_grad ? HalfSum(step, 0, a.X) : null;
            bMean = a.X.requires_grad ? HalfSum(step, 1, b.X) : null;
        }
        var output = Rules.ProductRule.InputHalf(a.X, b.X, aMean, bMean, matmul);
        scope.MoveToOuter(output);
        return new Act(output);
    }

    /// <summary>
    /// <c>(x + x0)/2</c> for every row of <paramref name="x"/> against its group's tape activation: x/2, then x0/2 added
    /// over each group's rows, on the tape's own extent (the padding's reference is 0: see <see cref="Assemble"/>). Halving
    /// is exact, so <c>x/2 + x0/2</c> rounds once, to <c>(x + x0)/2</c>, for every value but subnormals.
    /// </summary>
    internal Tensor HalfSum(int step, int operand, Tensor x)
    {
        var sum = x.detach() * 0.5;
        EachGroupRegion(sum, step, operand, (region, tape) => region.add_(tape, alpha: 0.5));
        return sum;
    }

    /// <param name="grouped">
    /// The rule's fused loop, given x and each group's tape activation as recorded (its own length; the loop reads the
    /// padding's values past it), or null: none, or it declines the layout.
    /// </param>
    private Act Run(Act[] operands, Func<Act[], Act> rule, long? softmaxDim = null, Func<Tensor, IReadOnlyList<Tensor>, Tensor?>? grouped = null)
    {
        int step = _step++;
        using var scope = NewDisposeScope();
        // One group: its row, broadcast over the batch. Several: a fused loop reading each group's tape where it is, or
        // else each row's reference copied out to it.
        var output = _tapes.Count == 1
            ? rule(operands.Select((a, s) => new Act(a.X, Assemble(step, s, a.X, softmaxDim))).ToArray()).X
            : grouped?.Invoke(operands[0].X, Checked(step, operands[0].X))
              ?? rule(operands.Select((a, s) => new Act(a.X, Assemble(step, s, a.X, softmaxDim))).ToArray()).X;
        scope.MoveToOuter(output);
        return new Act(output);
    }

    /// <summary>
    /// Every group's tape activation [1, …] for a step in one tensor, padded to the pass's activation
    /// <paramref name="x"/> [n, …]: one group's as one row [1, …] (broadcast over the batch), several copied out to each
    /// of the group's rows [n, …].
    /// Every dimension (past the batch one) where a tape has its length and the pass has its width grows by zeros, and
    /// the softmax's own dimension, before a softmax, by finfo.min (over the zeros of the others). Any other difference
    /// of shape means the tape was recorded for something else, and is an error. One fill, then one copy per group (and
    /// one fill of its masked keys); one tape that needs no padding is itself.
    /// </summary>
    internal Tensor Assemble(int step, int operand, Tensor x, long? softmaxDim)
    {
        var first = _tapes[0].Input(step, operand);
        var shape = x.shape;
        if (_tapes.Count == 1 && first.shape.SequenceEqual(shape.Select((d, i) => i == 0 ? 1 : d)))
            return first;
        shape[0] = _tapes.Count > 1 ? shape[0] : 1;
        var result = zeros(shape, first.dtype, device: first.device);
        EachGroupRegion(result, step, operand, (region, tape) => region.copy_(tape)); // [1, …] broadcast over the group's rows
        if (softmaxDim is long d)
        {
            if (IsPacked(shape)) throw new InvalidOperationException("a softmax over packed tokens: attention runs on the padded layout");
            long masked = d < 0 ? d + shape.Length : d, start = 0;
            for (int g = 0; g < _tapes.Count; g++)
            {
                long have = _tapes[g].Input(step, operand).shape[masked], rows = _tapes.Count == 1 ? 1 : _rowsPerGroup[g];
                if (have != shape[masked]) result.narrow(0, start, rows).narrow(masked, have, shape[masked] - have).fill_(finfo(first.dtype).min);
                start += rows;
            }
        }
        return result;
    }

    /// <summary>
    /// That group <paramref name="g"/>'s tape activation of shape <paramref name="tape"/> [1, …] fits the pass's activation
    /// of shape <paramref name="x"/>: x's shape, but the tape's length where the pass has its width; else an error.
    /// </summary>
    /// <remarks>Packed (<paramref name="packed"/>: x is [1, N, …]): the tape is [1, l_g, …], x's shape past the tokens.</remarks>
    private void Check(long[] tape, int g, long[] x, bool packed = false)
    {
        if (tape.Length != x.Length || tape[0] != 1) throw Mismatch(tape, x);
        if (packed && tape[1] != _lengths[g]) throw Mismatch(tape, x);
        for (int dim = packed ? 2 : 1; dim < x.Length; dim++)
            if (tape[dim] != x[dim] && (packed || tape[dim] != _lengths[g] || x[dim] != _width)) throw Mismatch(tape, x);
    }

    /// <summary>Every group's tape activation for a step, each checked to fit the pass's <paramref name="x"/> (see <see cref="Check"/>).</summary>
    private List<Tensor> Checked(int step, Tensor x)
    {
        var shape = x.shape;
        bool packed = IsPacked(shape);
        return _tapes.Select((t, g) => { var tape = t.Input(step, 0); Check(tape.shape, g, shape, packed); return tape; }).ToList();
    }

    private InvalidOperationException Mismatch(long[] tape, long[] x) => new(
        $"a reference tape's activation [{string.Join(", ", tape)}] does not fit the pass's [{string.Join(", ", x)}] (width {_width}): the tape was recorded for another model or length");
}
