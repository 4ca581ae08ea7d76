namespace AttributionFleet.Engine.Faithfulness;

/// <summary>
/// How faithful one text's scores are, measured on the model (see <see cref="FaithfulnessEvaluator"/> for the
/// definitions). All values are changes of <c>p_c</c>, the probability of the explained class c: comprehensiveness
/// and the deletion AOPC are better when higher, sufficiency is better when lower (near 0 or below), the insertion
/// AOPC is better when higher.
/// </summary>
/// <param name="Fractions">The fractions k of the text's tokens (specials excluded): 0.01, 0.05, 0.10, 0.20.</param>
/// <param name="Tokens">How many tokens each fraction is: <c>min(n, max(1, ceil(k·n)))</c> of the n non-special tokens.</param>
/// <param name="Comprehensiveness"><c>p_c(x) − p_c(x without its top tokens)</c>, per fraction.</param>
/// <param name="Sufficiency"><c>p_c(x) − p_c(only the top tokens of x)</c>, per fraction.</param>
/// <param name="Probability"><c>p_c(x)</c> (plain forward).</param>
/// <param name="AopcDeletion">Mean over the deletion curve's points j = 0..P of <c>p_c(x) − p_c(x without its top k_j tokens)</c>.</param>
/// <param name="AopcInsertion">Mean over the insertion curve's points of <c>p_c(top k_j tokens only) − p_c(no token)</c>.</param>
/// <param name="CurvePoints">P + 1: the curves' points, <c>k_j = round(j·n/P)</c> with <c>P = min(n, 20)</c>.</param>
/// <param name="PerturbedInputs">Distinct inputs this text sent through the model (x itself included): the cost, in forwards of one text.</param>
/// <param name="Milliseconds">This text's share of the batched forward passes' time.</param>
public sealed record FaithfulnessResult(
    double[] Fractions,
    int[] Tokens,
    double[] Comprehensiveness,
    double[] Sufficiency,
    double Probability,
    double AopcDeletion,
    double AopcInsertion,
    int CurvePoints,
    int PerturbedInputs,
    double Milliseconds)
{
    /// <summary>ERASER's aggregate: the mean over the fractions.</summary>
    public double ComprehensivenessMean => Comprehensiveness.Average();
    public double SufficiencyMean => Sufficiency.Average();
}
