using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Attribution;

/// <summary>
/// A padded batch (tiny-bert-stress: real lengths 16, 12, 9, 16, [PAD] after [SEP], attention mask) explained with
/// DeepLift gives each text the scores it gets alone without padding; padded positions score exactly 0.
/// </summary>
public class PaddedBatchTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(ScalarType.Float64, OutputKind.Logit)]
    [InlineData(ScalarType.Float64, OutputKind.CenteredLogit)]
    [InlineData(ScalarType.Float64, OutputKind.Probability)]
    [InlineData(ScalarType.Float32, OutputKind.Logit)]
    [InlineData(ScalarType.Float32, OutputKind.CenteredLogit)]
    [InlineData(ScalarType.Float32, OutputKind.Probability)]
    public void PaddedBatchEqualsTextsAlone(ScalarType dtype, OutputKind kind)
    {
        var c = RepoPaths.LoadCase("tiny-bert-stress");
        using var model = ModelLoader.Load(RepoPaths.Reference("tiny-bert-stress"), dtype: dtype);
        var ids = tensor(Json.Long2(c.GetProperty("input_ids")));
        var mask = tensor(Json.Long2(c.GetProperty("attention_mask")));
        var refIds = tensor(Json.Long2(c.GetProperty("baseline_ids")));
        long target = c.GetProperty("target").GetInt64();
        var options = new MethodOptions { Output = kind };
        var padded = new DeepLift().Attribute(model,
            new AttributionBatch(ids, mask, new[] { model.WordEmbeddings(refIds) }, Enumerable.Repeat(target, 4).ToArray()), options);

        double tol = dtype == ScalarType.Float64 ? 1e-12 : 1e-6;
        double worst = 0;
        for (int i = 0; i < 4; i++)
        {
            long n = mask[i].sum().item<long>();
            var one = TensorIndex.Slice(0, n);
            var alone = new DeepLift().Attribute(model, new AttributionBatch(
                ids[i, one].unsqueeze(0), ones(1, n, dtype: ScalarType.Int64),
                new[] { model.WordEmbeddings(refIds[i, one].unsqueeze(0)) }, new[] { target }), options);
            var scale = Math.Max(1, alone.Scores.abs().max().item<double>());
            double diff = (padded.Scores[i, one] - alone.Scores[0]).abs().max().item<double>();
            worst = Math.Max(worst, diff / scale);
            Assert.True(diff <= tol * scale, $"text {i} (length {n}): max |padded − alone| = {diff:E2}");
            Assert.True(Math.Abs(padded.Fx[i].item<double>() - alone.Fx[0].item<double>()) <= tol * Math.Max(1, Math.Abs(alone.Fx[0].item<double>())), $"text {i}: f(x) differs");
            Assert.True(Math.Abs(padded.Fx0[i].item<double>() - alone.Fx0[0].item<double>()) <= tol * Math.Max(1, Math.Abs(alone.Fx0[0].item<double>())), $"text {i}: f(x0) differs");
            if (n < 16)
            {
                var pads = padded.Scores[i, TensorIndex.Slice(n, null)];
                Assert.Equal(0.0, pads.abs().max().item<double>());
                Assert.Equal(0.0, padded.Attributions[i, TensorIndex.Slice(n, null)].abs().max().item<double>());
            }
        }
        output.WriteLine($"{dtype} {kind}: max |padded − alone| / max(1, |scores|) = {worst:E2}");
    }
}
