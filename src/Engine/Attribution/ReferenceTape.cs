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

    /// <summary>
    /// <see cref="Record"/> for several references at once ([k, W, H], masks [k, W]): one recording pass of k rows (on an
    /// accelerator k passes of one row would each pay the launches), cut into one tape per row (each row copied out, so
    /// every tape owns its memory and is evicted on its own).
    /// </summary>
    internal static IReadOnlyList<ReferenceTape> RecordRows(Models.ITextModel model, Tensor references, Tensor masks, DeepLiftOps ops)
    {
        long k = references.shape[0];
        if (k == 1) return new[] { Record(model, references, masks, ops) };
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var recorder = new TapeRecorder(ops);
        var r = references.detach();
        var logits = model.Forward(recorder, Act.ReferenceOnly(r), masks);
        Tensor Row(Tensor t, long g)
        {
            if (t.shape[0] != k) throw new InvalidOperationException($"a reference activation has {t.shape[0]} rows in a recording pass of {k}");
            return Keep(t.narrow(0, g, 1).clone());
        }
        var tapes = new List<ReferenceTape>();
        for (long g = 0; g < k; g++)
            tapes.Add(new ReferenceTape(recorder.Inputs.Select(step => step.Select(t => Row(t, g)).ToArray()).ToList(), Row(logits.Ref, g)));
        foreach (var t in recorder.Inputs.SelectMany(x => x)) t.Dispose();
        return tapes;
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
        public override Act LayerNorm(Act a, Tensor weight, Tensor bias, double eps) { Note(a); return inner.LayerNorm(a, weight, bias, eps); }
        public override Act MatMul(Act a, Act b) { Note(a, b); return inner.MatMul(a, b); }
        public override Act Mul(Act a, Act b) { Note(a, b); return inner.Mul(a, b); }
    }
}

/// <summary>
/// Ops for a pass whose reference half comes from tapes: linear maps run on the input half only; every rule gets, for
/// each group of rows (texts of one length, contiguous), that group's recorded reference activation, one row wide,
/// broadcast over the group. With one group the rule runs once on the whole batch (exactly what a pass carrying its
/// reference computes); with several, on each group's rows (split/cat: autograd routes each group's gradient back).
/// The rules' own reference outputs are dropped: the tape already holds what the next rule needs.
/// </summary>
internal sealed class TapeReplayOps(DeepLiftOps inner, IReadOnlyList<ReferenceTape> tapes, long[] rowsPerGroup) : TensorOps
{
    private int _step;

    /// <summary>Rule calls replayed so far (equal to the tapes' steps after a whole forward).</summary>
    public int Steps => _step;

    public override Act Apply(Act a, Activation activation) => Run(new[] { a }, p => inner.Apply(p[0], activation));
    public override Act Softmax(Act a, long dim) => Run(new[] { a }, p => inner.Softmax(p[0], dim));
    public override Act LayerNorm(Act a, Tensor weight, Tensor bias, double eps) => Run(new[] { a }, p => inner.LayerNorm(p[0], weight, bias, eps));
    public override Act MatMul(Act a, Act b) => Run(new[] { a, b }, p => inner.MatMul(p[0], p[1]));
    public override Act Mul(Act a, Act b) => Run(new[] { a, b }, p => inner.Mul(p[0], p[1]));

    private Act Run(Act[] operands, Func<Act[], Act> rule)
    {
        int step = _step++;
        if (tapes.Count == 1)
            return new Act(rule(operands.Select((a, s) => new Act(a.X, tapes[0].Input(step, s))).ToArray()).X);
        var parts = operands.Select(a => a.X.split(rowsPerGroup, 0)).ToArray();
        var outputs = new Tensor[tapes.Count];
        for (int g = 0; g < tapes.Count; g++)
            outputs[g] = rule(operands.Select((_, s) => new Act(parts[s][g], tapes[g].Input(step, s))).ToArray()).X;
        return new Act(cat(outputs, 0));
    }
}
