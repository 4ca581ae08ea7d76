using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Attribution;

/// <summary>Turns the model's output [B, C] into the explained scalar per text [B].</summary>
public static class TargetOutput
{
    public static Act Select(TensorOps ops, Act logits, long[] targets, OutputKind output)
    {
        var index = tensor(targets, dtype: ScalarType.Int64, device: logits.X.device).unsqueeze(1);
        // A reference shared by the batch has one row: each text's target is picked from it.
        Tensor Pick(Tensor t) => (t.shape[0] == index.shape[0] ? t : t.expand(index.shape[0], -1)).gather(1, index).squeeze(1);
        return output switch
        {
            OutputKind.Logit => ops.Map(logits, Pick),
            // z_c − mean_k z_k is linear in z: one backward pass, summation-to-delta holds for it.
            OutputKind.CenteredLogit => ops.Map(logits, t => Pick(t) - t.mean(new long[] { 1 })),
            OutputKind.Probability => ops.Map(ops.Softmax(logits, 1), Pick),
            // Independent labels: the label's own sigmoid, an elementwise nonlinearity of one logit (rescale rule).
            OutputKind.SigmoidProbability => ops.Apply(ops.Map(logits, Pick), Activation.Sigmoid),
            _ => throw new ArgumentOutOfRangeException(nameof(output)),
        };
    }
}
